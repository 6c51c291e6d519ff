"""``kind = "hubspot"``: HubSpot CRM v3 objects over its REST API (docs/hubspot.md)."""
