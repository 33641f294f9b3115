"""The optional Hugging Face token, kept only in the system keyring (never in a config file or a log)."""

from __future__ import annotations

import contextlib

SERVICE = "Enclave"
USERNAME = "huggingface"


class TokenStoreError(Exception):
    pass


NO_KEYRING = (
    "No system keyring is available to keep a Hugging Face token safely, so none is stored. Public models download "
    "without one; for gated models install a keyring backend (e.g. gnome-keyring or KWallet) and try again."
)


def _usable_keyring() -> object:
    import keyring
    from keyring.backends.fail import Keyring as FailKeyring

    backend = keyring.get_keyring()
    if isinstance(backend, FailKeyring) or getattr(backend, "priority", 1) <= 0:
        raise TokenStoreError(NO_KEYRING)
    return keyring


def get_token() -> str | None:
    """The stored token, or None (also when no keyring exists: public downloads still work)."""
    try:
        keyring = _usable_keyring()
        token = keyring.get_password(SERVICE, USERNAME)  # type: ignore[attr-defined]
    except TokenStoreError:
        return None
    except Exception:  # a locked or broken keyring must not stop public downloads
        return None
    return str(token) if token else None


def set_token(token: str) -> None:
    token = token.strip()
    if not token.startswith("hf_"):
        raise TokenStoreError("That does not look like a Hugging Face token (they start with 'hf_').")
    keyring = _usable_keyring()
    try:
        keyring.set_password(SERVICE, USERNAME, token)  # type: ignore[attr-defined]
    except Exception as exc:
        raise TokenStoreError(f"The system keyring refused to store the token: {exc}") from exc


def delete_token() -> None:
    from keyring.errors import PasswordDeleteError

    backend = _usable_keyring()
    with contextlib.suppress(PasswordDeleteError):
        backend.delete_password(SERVICE, USERNAME)  # type: ignore[attr-defined]
