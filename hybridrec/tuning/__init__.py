"""`hybridrec tune`: a search over a config's settings with Optuna, scored on validation rows carved from the
training part of the config's own split (the test rows are set aside and never read).

- space.py: the search space as data (config key -> distribution) and a trial's values -> a config payload;
- objective.py: the tuning data (read and split once), one trial's fit with per-epoch pruning, its score;
- study.py: the study in OUT/study.journal (resumable), the budget, trials.csv and best.yaml.

Optuna is imported inside the functions that use it: `import hybridrec` stays light.
"""

from hybridrec.tuning.study import TuneResult, tune

__all__ = ["TuneResult", "tune"]
