"""Running a benchmark: the request loop and what it records (one JSON line a request),
with the process's memory, the machine's load and the environment beside it."""
