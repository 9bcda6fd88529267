"""The pipeline stages over a run directory: extract → sweep → select → diagnose → evaluate → capability →
figures.

Each stage module declares a `STAGE` (`base.Stage`: inputs, outputs, when it is done, how it runs); `pipeline`
only sequences them. `run_dir` holds the run directory and its checked artifact readers."""

import workbench.organism.vocabulary  # noqa: F401  (the organism's datasets resolve wherever a stage reads a name)
