# Config root added to Hydra's search path by conf/*.yaml (pkg://launchers.conf).
