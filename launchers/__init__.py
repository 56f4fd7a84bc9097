"""Where runs execute: Hydra launcher profiles (conf/launcher/) and cluster helpers."""
