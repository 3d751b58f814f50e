"""The statebus benchmark: `python -m bench` measures statebus and its baselines in one run.

Every server is started by the bench itself on 127.0.0.1 and every figure in
the printed table comes from the same run, so the ratios compare like with
like on whatever machine runs it. See bench/README.md.
"""
