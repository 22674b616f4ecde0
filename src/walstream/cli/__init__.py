"""The command line: `walstream` (main.py), `walstream tail` (tail.py) and `walstream demo` (demo.py)."""
