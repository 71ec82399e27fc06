"""target-klaviyo: a Singer target that loads warehouse data into Klaviyo."""
