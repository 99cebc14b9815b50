"""MkDocs hooks for this site: keep the reference pages true to the code they describe.

* ``<!-- cli-help: bulk -->`` alone on a line of a page becomes the output of ``enkash-coins bulk --help``,
  run at build time, so the CLI reference can never list an option the command lacks.
* The build fails when a public name (``enkash_coins.__all__``, ``enkash_coins.testing.__all__``)
  has no ``::: enkash_coins...`` block in the API reference: a new public name needs its entry.
* Files that live outside ``docs/`` but belong on the site (the benchmark chart) are
  added to it from where they are, so there is one copy to keep up to date; pages link
  them by their path in the repository (``../benchmarks/results/latest.png``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

HELP = re.compile(r"(?m)^<!-- cli-help: ?([a-z -]*?) ?-->[ \t]*$")  # alone on its line (not quoted in text)
REFERENCE = ("reference/api.md", "reference/testing.md")
#: Site path -> file in the repository, for files kept outside docs/.
OUTSIDE = {"assets/benchmarks/latest.png": "benchmarks/results/latest.png"}


def _help(command: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "enkash_coins", *command.split(), "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    if done.returncode != 0:
        raise PluginError(f"`enkash-coins {command} --help` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.rstrip()


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    def block(match: re.Match[str]) -> str:
        command = match.group(1).strip()
        shown = f"enkash-coins {command} --help".replace("  ", " ")
        return f"```text\n$ {shown}\n{_help(command)}\n```"

    # A page links a file outside docs/ by its path in the repository (so the link also
    # works when the page is read on its own); on the site it is the copy added in on_files.
    here = os.path.dirname(page.file.src_uri)
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    docs = os.path.abspath(config["docs_dir"])
    for dest, source in OUTSIDE.items():
        in_repo = os.path.relpath(os.path.join(root, source), os.path.join(docs, here)).replace(os.sep, "/")
        on_site = os.path.relpath(dest, here or ".").replace(os.sep, "/")
        markdown = markdown.replace(f"]({in_repo})", f"]({on_site})")
    return HELP.sub(block, markdown)


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    import enkash_coins
    import enkash_coins.testing

    documented: set[str] = set()
    for name in REFERENCE:
        file = files.get_file_from_path(name)
        if file is None:
            raise PluginError(f"docs/{name} is missing")
        text = file.content_string
        documented.update(re.findall(r"(?m)^::: (enkash_coins(?:\.testing)?\.[A-Za-z_]+)\s*$", text))
    public = {f"enkash_coins.{n}" for n in enkash_coins.__all__ if not n.startswith("_")}
    # The test doubles are documented once, under enkash_coins.testing (enkash_coins re-exports them).
    testing = set(enkash_coins.testing.__all__)
    public = {p for p in public if p.rsplit(".", 1)[1] not in testing}
    public |= {f"enkash_coins.testing.{n}" for n in testing}
    missing = sorted(public - documented)
    if missing:
        raise PluginError("the API reference has no entry for: " + ", ".join(missing)
                          + f" (add a '::: name' block to docs/{REFERENCE[0]} or docs/{REFERENCE[1]})")
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    for dest, source in OUTSIDE.items():
        path = os.path.join(root, source)
        if not os.path.isfile(path):
            raise PluginError(f"{source} is missing (the site shows it as {dest})")
        files.append(File.generated(config, dest, abs_src_path=path))
    return files
