"""The README's curl walk-through, run verbatim against a live server."""

import json
import re
import subprocess
from pathlib import Path

from servers import ROOT, gunicorn, migrate, server_env


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A whole session with curl", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's curl session has no sh block"
    return block.group(1)


def test_the_readme_session_works_verbatim_and_again(tmp_path: Path) -> None:
    """Pasted twice into one database (a reader trying it again), it works both times."""
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path / 'readme.db'}")
    migrate(env)
    with gunicorn(env) as url:
        for run in ("1", "2"):
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", walkthrough()],
                env=env | {"API": url, "RUN": run},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            check_session(result.stdout, run)


def check_session(out: str, run: str) -> None:
    assert f'"username":"alice{run}"' in out
    assert "Traceback" not in out
    tag_search, text_search = re.findall(r"^\[.*\]$", out, re.M)
    assert re.findall(r'"name":"([^"]+)","description"', tag_search) == ["Milk"]
    assert re.findall(r'"name":"([^"]+)","description"', text_search) == ["Oat milk", "Milk"]
    assert re.search(r"^x-total-count: 7", out, re.M | re.I)
    assert 'rel="prev"' in out and 'rel="next"' in out
    assert '"error":"insufficient_stock"' in out and "has 12 in stock" in out
    # The sale sent twice with one key: two 201s with the same movement, one replayed.
    sales = re.findall(r'"stock_after":(\d+)', out)
    assert sales == ["12", "7", "7"]
    assert len(re.findall(r"^HTTP/1.1 201", out, re.M)) == 2
    assert len(re.findall(r"^Idempotent-Replayed: true", out, re.M | re.I)) == 1
    assert re.search(r"^7$", out, re.M)
    # The API key changed a price, and may not manage the account.
    assert re.search(r"^2.29$", out, re.M)
    assert '"error":"insufficient_scope"' in out
    assert '{"message":"Successfully logged out."}' in out
    last = json.loads(out.rstrip().splitlines()[-1])
    assert last == {
        "code": 401,
        "status": "Unauthorized",
        "error": "token_revoked",
        "message": "The token has been revoked; sign in again.",
    }


def test_the_repository_stands_alone() -> None:
    """A fresh clone is complete: the contract is docs/API.md, and no tracked file
    sends its reader to a directory outside the repository."""
    assert "[docs/API.md](docs/API.md)" in (ROOT / "README.md").read_text()
    contract = (ROOT / "docs" / "API.md").read_text()
    headings = [line.split(".")[0] for line in contract.splitlines() if line[:3] == "## "]
    assert headings == [f"## {n}" for n in range(1, 17)]  # issues and code cite each §
    for page in re.findall(r"\]\(([a-z-]+\.md)", contract):
        assert (ROOT / "docs" / page).is_file(), page
    outside = "../" + "shared"  # spelled in two parts so that this file does not match
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file() and path.suffix not in (".png", ".whl"):
            assert outside not in path.read_text(errors="replace"), name


def test_the_docs_describe_what_is_there() -> None:
    """The session's note is said once and says what the test above does; a pointer to
    a README section names one that exists; .env.example does not deny that the
    service reads a .env (core/web/env.py: load_env_file)."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count("`tests/system/test_readme.py` runs this block") == 1
    assert "runs this block, verbatim and twice on one database" in readme
    headings = set(re.findall(r"^##+ (.+)$", readme, re.M))
    pointers = subprocess.run(
        ["git", "grep", "-h", "-o", 'README "[^"]*"', "--", ".", ":!tests/system/test_readme.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    for section in re.findall(r'README "([^"]*)"', pointers):
        assert section in headings, section
    example = (ROOT / ".env.example").read_text()
    header = example.split("\n\n", 1)[0]
    assert "does not read .env" not in header
    assert "a copy of this file named .env" in header
