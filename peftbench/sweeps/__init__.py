"""Sweeps: a request planned into units, run by a launcher, resumed from the records.

`execute(request, store, launcher)` plans the request, writes its manifest and a session, and hands
the units to the launcher: in this process, local worker processes, or a Slurm job array.
"""
