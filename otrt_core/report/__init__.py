"""A finished job's report: statistics of its predictions, what its models cost, its page."""
