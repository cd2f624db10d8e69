"""The catalog: plans, their versions and usage prices, add-ons, limits (pricing.py rates)."""
