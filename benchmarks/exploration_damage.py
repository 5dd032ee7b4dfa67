"""Does an exploring Emrakul wreck its long-lived training organisms, whatever the credit form?

Trains Emrakul (RigL-imitation warm start, then MAPPO, RigL control twin) on two suite streams
(label-permuted and class-incremental digits, training seeds 301–302) for 320 surgeries, once
per ``policy.training.credit`` form given on the command line, and prints, per episode, the
organism's online accuracy minus its twin's (``r_accuracy − r_control``) and the Specialists'
policy entropy. The same seed under both forms shows whether a collapse comes from what was
learned or from exploration itself (issue 24's note).

Usage: ``.venv/bin/python benchmarks/exploration_damage.py change level [KEY=VALUE ...]``
(about 4 minutes a form on one core); arguments with ``=`` are overrides of the training
config, e.g. ``policy.params.specialist_log_std=-1.5`` for less exploration noise. Prints one
JSON line per form.
"""

from __future__ import annotations

import json
import sys

from esper.bench.quality_evaluation import compose_config, policy_overrides
from esper.bench.quality_suite import SMALL_STREAMS
from esper.policies.training import train_policy


def main() -> None:
    extra = [a for a in sys.argv[1:] if "=" in a]
    for form in [a for a in sys.argv[1:] if "=" not in a] or ["change", "level"]:
        cfg = compose_config([
            "experiment.seed=300", "policy=emrakul", "policy.training.surgeries=320",
            "policy.training.rollout=16", "policy.training.imitation=24",
            "policy.training.control=rigl", f"policy.training.credit={form}",
            "+policy.training.learner_params.lr=1e-4", *extra,
        ])  # fmt: skip
        streams = [SMALL_STREAMS[2], SMALL_STREAMS[1]]
        organisms = [compose_config([*policy_overrides(s, "emrakul", 0.1),
                                     f"experiment.seed={301 + i}"])
                     for i, s in enumerate(streams)]  # fmt: skip
        history = train_policy(cfg, organisms).history[1:]
        rows = [
            (e["surgery"], e["workload"].split("/")[1], round(e["r_accuracy"] - e["r_control"], 3),
             round(e.get("specialists/entropy", float("nan")), 3))
            for e in history
        ]  # fmt: skip
        print(json.dumps({"credit": form, "overrides": extra, "episodes": rows}))


if __name__ == "__main__":
    main()
