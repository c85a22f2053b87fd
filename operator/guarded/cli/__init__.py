"""The kubectl plugin `kubectl guarded`: list, inspect, watch and steer GuardedRollouts.

Layout: `parser` (arguments and help), `main` (entry point and error handling), `commands` (glue),
`kube` (the only module that talks to the API server), and pure functions on plain dicts:
`tables` (tables, ages, list rows, history), `view` (the status view and progress bar) and `flow`
(the request-waiting and watch loops, which take their I/O as callables).
"""
