"""Surgery policies (heuristic baselines and Emrakul); built by the surgery issue."""
