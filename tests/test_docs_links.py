"""The pages a user reads lead somewhere: every relative link of README.md, config/README.md
and docs/ points to a file that exists (and a ``page.md#anchor`` link to one of that page's
headings), and every command in their shell code blocks names only make targets, scripts,
profiles, config files and requirement files that exist."""

import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the pages whose commands a user copies; docs/results/ records commands as they ran
COMMAND_PAGES = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK_PAGES = [*COMMAND_PAGES, *sorted((REPO / "docs" / "results").rglob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
# programs a documented command may start with, beyond the repository's own scripts
PROGRAMS = {"make", "bash", "sh", "python", "snakemake", "pip", "snakedeploy", "cd"}


def page_name(page):
    return str(page.relative_to(REPO))


def shell_blocks(text):
    """The bodies of the page's shell code blocks."""
    return [body for lang, body in FENCE.findall(text) if lang in SHELL]


def prose(text):
    """The page without its code blocks and inline code, where Markdown links live."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    """The anchors of a Markdown page's headings (a repeated heading gets -1, -2, ...)."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", page.read_text()), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page):
    """One sentence per relative link of ``page`` that leads nowhere."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{page_name(page)}: {target} does not exist")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{page_name(page)}: {target}: {where.name} has no heading #{anchor}")
    return broken


def make_targets(makefile=REPO / "Makefile"):
    text = makefile.read_text()
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.MULTILINE)), text


def commands(block):
    """The commands of a shell block: continuation lines joined, comments dropped, split at
    ``&&``, ``||``, ``;`` and ``|``; each a list of words."""
    for line in block.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
            words = shlex.split(part, comments=True)
            if words:
                yield words


def placeholder(word):
    """A word the reader fills in or the shell expands: nothing to look for in the repository."""
    return word.startswith("/") or any(c in word for c in "<>{}$*") or "..." in word


def missing_in_command(words, targets, makefile):
    """What one command names that does not exist, as sentences; "cd" when it leaves the
    clone (the block's later commands run elsewhere)."""
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # VAR=value before the program
        words = words[1:]
    if not words:
        return []
    program, args = words[0], words[1:]
    name = program.rsplit("/", 1)[-1]
    missing = []

    def need(path, what):
        if not placeholder(path) and not (REPO / path).exists():
            missing.append(f"{what} {path} does not exist")

    if program == "cd":
        return ["cd"]
    if name == "make":
        for word in args:
            if "=" in word:
                variable = word.split("=", 1)[0]
                if not re.search(rf"\b{re.escape(variable)}\b", makefile):
                    missing.append(f"the Makefile has no variable {variable}")
            elif not word.startswith("-") and word not in targets:
                missing.append(f"the Makefile has no target {word}")
    elif name in ("bash", "sh"):
        scripts = [w for w in args if not w.startswith("-")]
        if scripts:
            need(scripts[0], "script")
    elif name.startswith("python"):
        if args and args[0] != "-m":
            scripts = [w for w in args if not w.startswith("-")]
            if scripts:
                need(scripts[0], "script")
    elif program.endswith((".py", ".sh")):
        need(program, "script")
    elif name not in PROGRAMS:
        missing.append(f"{program} is not a command the documentation may name")
    for i, word in enumerate(args):
        for option, what in (("--configfile", "config file"), ("--profile", "profile"),
                             ("--snakefile", "Snakefile"), ("-r", "requirements file")):  # fmt: skip
            if word == option and i + 1 < len(args):
                need(args[i + 1], what)
            elif word.startswith(option + "=") and option.startswith("--"):
                need(word.split("=", 1)[1], what)
    return missing


def missing_in_page(page, makefile_path=REPO / "Makefile"):
    """One sentence per command of ``page``'s shell blocks that names what does not exist."""
    targets, makefile = make_targets(makefile_path)
    found = []
    for block in shell_blocks(page.read_text()):
        for words in commands(block):
            missing = missing_in_command(words, targets, makefile)
            if missing == ["cd"]:
                break
            found += [f"{page_name(page)}: `{shlex.join(words)}`: {m}" for m in missing]
    return found


@pytest.mark.parametrize("page", LINK_PAGES, ids=page_name)
def test_every_relative_link_leads_to_a_file(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=page_name)
def test_every_command_names_what_exists(page):
    assert missing_in_page(page) == []


def test_the_pages_have_commands_and_links_to_check():
    """The checks above look at something: the parser finds the commands and links there are."""
    readme = (REPO / "README.md").read_text()
    assert len(LINK.findall(prose(readme))) >= 10
    gpu = [words for block in shell_blocks((REPO / "docs" / "gpu.md").read_text()) for words in commands(block)]
    assert ["make", "env-tensorrt"] in gpu
    assert ["bash", "envs/offline-gpu.sh"] in gpu


def test_the_set_up_is_the_two_commands_ci_runs():
    """README's two commands, exactly; .ci/run calls the second."""
    first = shell_blocks((REPO / "README.md").read_text())[0]
    assert list(commands(first)) == [["make", "demo"], ["make", "test"]]
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()


PAGE = """# Title

## Set-up: two commands

See [the map](map.md), [its part](map.md#the-part), [this](#set-up-two-commands) and
[the web](https://example.org/x). Not a link: `[x](nowhere.md)`.

```sh
make demo   # a comment
make nothing WHEEL_PYTHON=python3.12 NO_SUCH_VAR=1
PYTHONPATH=src python tools/run.py --configfile conf/a.yaml && bash tools/missing.sh
snakemake --profile profiles/none --configfile=conf/b.yaml \\
    --cores 1
snakmake -n
pip download -r reqs.txt
cd elsewhere
make neither
```

```python
make("not a command")
```
"""


@pytest.fixture
def docs_tree(tmp_path):
    (tmp_path / "Makefile").write_text("WHEEL_PYTHON ?= python3\n\ndemo: env\n\tsnakemake\nenv:\n\ttrue\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "run.py").write_text("")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "b.yaml").write_text("")
    (tmp_path / "map.md").write_text("# Map\n\n## The `part`\n")
    (tmp_path / "page.md").write_text(PAGE)
    return tmp_path


def test_the_checkers_find_what_is_missing(docs_tree, monkeypatch):
    """On a page made for it, each broken link and each missing name, and nothing else."""
    monkeypatch.setattr(sys.modules[__name__], "REPO", docs_tree)
    page = docs_tree / "page.md"
    assert broken_links(page) == []
    page.write_text(PAGE.replace("map.md#the-part", "map.md#no-part").replace("(map.md)", "(gone.md)"))
    assert broken_links(page) == [
        "page.md: gone.md does not exist",
        "page.md: map.md#no-part: map.md has no heading #no-part",
    ]
    page.write_text(PAGE)
    assert missing_in_page(page, docs_tree / "Makefile") == [
        "page.md: `make nothing WHEEL_PYTHON=python3.12 NO_SUCH_VAR=1`: the Makefile has no target nothing",
        "page.md: `make nothing WHEEL_PYTHON=python3.12 NO_SUCH_VAR=1`: the Makefile has no variable NO_SUCH_VAR",
        "page.md: `PYTHONPATH=src python tools/run.py --configfile conf/a.yaml`: config file conf/a.yaml does not exist",
        "page.md: `bash tools/missing.sh`: script tools/missing.sh does not exist",
        "page.md: `snakemake --profile profiles/none --configfile=conf/b.yaml --cores 1`: profile profiles/none does not exist",
        "page.md: `snakmake -n`: snakmake is not a command the documentation may name",
        "page.md: `pip download -r reqs.txt`: requirements file reqs.txt does not exist",
    ]  # fmt: skip
