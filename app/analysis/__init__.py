"""Stage 1–3 analyses as pure functions over arrays and frames (no HTTP, no SQL).

Each function takes plain inputs (numpy arrays, shapely geometries, dictionaries) and returns plain
results, so it can be tested against numeric oracles and reused by the processes in ``app.processes``.
"""
