"""Where Enclave keeps its files.

Everything lives under the platform's per-user directories, or under ``$ENCLAVE_HOME`` when it is set (tests and
portable installs use it): then data, config and cache all move together so nothing leaks into the real profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from enclave import APP_NAME


@dataclass(frozen=True)
class AppPaths:
    data: Path
    config: Path
    cache: Path

    @property
    def chats_db(self) -> Path:
        return self.data / "chats.sqlite3"

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    @property
    def models_dir(self) -> Path:
        return self.data / "models"

    @property
    def models_file(self) -> Path:
        """The installed-model registry (models/installed.py)."""
        return self.data / "models.json"

    @property
    def documents_db(self) -> Path:
        """The documents index (docs/index.py)."""
        return self.data / "documents.sqlite3"

    @property
    def load_marker(self) -> Path:
        """The model load in progress, kept if it crashed (usecases/loading.py: no crash loops at start)."""
        return self.data / "last-load.json"

    def ensure(self) -> AppPaths:
        for directory in (self.data, self.config, self.cache):
            directory.mkdir(parents=True, exist_ok=True)
        return self


def app_paths() -> AppPaths:
    """Resolve the directories, honouring ``ENCLAVE_HOME``."""
    home = os.environ.get("ENCLAVE_HOME")
    if home:
        root = Path(home).expanduser()
        return AppPaths(data=root / "data", config=root / "config", cache=root / "cache")
    return AppPaths(
        data=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        config=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        cache=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
    )
