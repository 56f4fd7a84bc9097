"""The error every entry point turns into one line and exit status 2: a config value that
cannot run. Its own module, so that the config checks and the env factory (which checks
its own settings) can both raise it without importing each other."""


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and what is accepted."""
