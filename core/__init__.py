"""The machinery every resource shares, one concern per module."""
