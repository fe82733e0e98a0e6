"""Step 3: enrichments. Each module turns one raw request fact into Mixpanel properties."""
