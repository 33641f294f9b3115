"""Which command opens a cited PDF at its page: only the desktop's default viewer, and only when it takes a page."""

from __future__ import annotations

from enclave.docs.viewer import page_command


def which_all(name: str) -> str | None:
    return f"/usr/bin/{name}"


def which_none(name: str) -> str | None:
    return None


def test_linux_viewers_that_take_a_page() -> None:
    pdf = "/home/me/report.pdf"
    assert page_command(pdf, 3, platform="linux", app="org.gnome.evince", which=which_all) == [
        "/usr/bin/evince",
        "--page-index=3",
        pdf,
    ]
    assert page_command(pdf, 3, platform="linux", app="org.kde.okular", which=which_all) == [
        "/usr/bin/okular",
        "-p",
        "3",
        pdf,
    ]
    assert page_command(pdf, 7, platform="linux", app="org.pwmt.zathura", which=which_all) == [
        "/usr/bin/zathura",
        "-P",
        "7",
        pdf,
    ]


def test_otherwise_the_file_is_opened_the_ordinary_way() -> None:
    pdf = "/home/me/report.pdf"
    # A default viewer we cannot pass a page to (a browser, say): never swap in another viewer.
    assert page_command(pdf, 3, platform="linux", app="firefox", which=which_all) is None
    assert page_command(pdf, 3, platform="linux", app="org.gnome.evince", which=which_none) is None
    assert page_command(pdf, 3, platform="darwin", which=which_all) is None
    assert page_command("/home/me/notes.md", 3, platform="linux", app="org.gnome.evince", which=which_all) is None
    assert page_command(pdf, 0, platform="linux", app="org.gnome.evince", which=which_all) is None


def test_windows_uses_sumatra_only_when_it_is_there() -> None:
    pdf = "C:\\Docs\\report.pdf"
    assert page_command(pdf, 2, platform="win32", which=which_none) is None
    assert page_command(pdf, 2, platform="win32", which=lambda n: "C:\\Sumatra\\SumatraPDF.exe") == [
        "C:\\Sumatra\\SumatraPDF.exe",
        "-page",
        "2",
        pdf,
    ]
