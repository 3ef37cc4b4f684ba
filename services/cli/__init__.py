"""The organizer's `workshop` command line: the queue's admin API from a terminal."""
