"""Surgery policies: heuristic baselines and Emrakul, all acting through the organism.

Importing this package registers every policy in :data:`POLICIES`.
"""

from esper.policies import baselines as baselines
from esper.policies import emrakul as emrakul
from esper.policies.base import POLICIES, Policy, make_policy, swap

__all__ = ["POLICIES", "Policy", "make_policy", "swap"]
