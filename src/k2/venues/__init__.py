"""Exchange adapters. ``parse`` functions are pure: frame text + receive time in, normalized trades out."""
