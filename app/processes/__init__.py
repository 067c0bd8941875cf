"""OGC API - Processes: the Stage 1 analyses as processes, their jobs and their published results."""
