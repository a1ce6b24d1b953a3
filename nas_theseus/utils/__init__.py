"""Small helpers shared across the package (hashing, seeding, atomic files)."""
