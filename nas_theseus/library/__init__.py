"""The block library: every block option scored once for every run of consecutive guide parts, and the solver."""
