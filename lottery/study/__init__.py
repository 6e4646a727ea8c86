"""``lottery reproduce``: the paper's study (Tables 1 and 2, the transfer matrix) on one resumable command."""
