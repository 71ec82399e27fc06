"""The Klaviyo HTTP layer: one client owning auth, pacing and retries."""
