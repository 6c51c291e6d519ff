"""Local fakes of external services that tests run in-process."""
