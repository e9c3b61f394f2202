"""The wheels of the H200 pack, as pip's resolver picks them from the project's pins.

    python wheels.py lock OUT.txt -r REQUIREMENTS [-c CONSTRAINTS] [--name NAME ...]
        pip's resolver (``pip install --dry-run --ignore-installed --report``), run by this
        interpreter (the target Python: the pack's Python 3.10 or 3.12), on REQUIREMENTS
        (--name: only the lines of those projects); writes every distribution it picks as
        ``name==version --hash=sha256:...``, a file ``pip wheel --require-hashes`` takes.
    python wheels.py verify LOCK.txt DIR
        every wheel in DIR is one of LOCK's pins and every pin has its wheel; each wheel's
        requirements (its METADATA, markers for this interpreter) hold among them. Exit 1
        with one line per difference.
    python wheels.py satisfied SITE
        on the GPU machine: each distribution installed in SITE has every requirement met by
        what this interpreter imports (SITE first on sys.path, then the image's packages).

Standard library only, plus pip (and its vendored ``packaging``) of the interpreter.
"""

import argparse
import email.parser
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile


def canonical(name):
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(paths, names=None):
    """The requirement lines of ``paths`` (comments, options and blank lines dropped), only
    those of ``names`` when given."""
    lines = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if not line or line.startswith("-"):
                    continue
                project = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)
                if names is None or canonical(project) in {canonical(n) for n in names}:
                    lines.append(line)
    return lines


def resolve(requirements, constraints=(), python=sys.executable, pip_args=()):
    """pip's report of what it would install for ``requirements`` (lines), from nothing, for
    ``python``: a list of {name, version, url, sha256, requires} in the report's order."""
    with tempfile.TemporaryDirectory() as work:
        req = os.path.join(work, "requirements.txt")
        with open(req, "w") as f:
            f.write("\n".join(requirements) + "\n")
        report = os.path.join(work, "report.json")
        command = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        command += ["--report", report, "-r", req, *pip_args]
        for path in constraints:
            command += ["-c", path]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip could not resolve {requirements}:\n{done.stderr.strip()}")
        with open(report) as f:
            installs = json.load(f)["install"]
    return [
        {
            "name": canonical(item["metadata"]["name"]),
            "version": item["metadata"]["version"],
            "url": item["download_info"]["url"],
            "sha256": (item["download_info"].get("archive_info") or {}).get("hashes", {}).get("sha256"),
            "requires": item["metadata"].get("requires_dist") or [],
        }
        for item in installs
    ]


def lock_lines(picked):
    """``name==version --hash=sha256:...`` per picked distribution, sorted by name."""
    return [
        f"{p['name']}=={p['version']}" + (f" --hash=sha256:{p['sha256']}" if p["sha256"] else "")
        for p in sorted(picked, key=lambda p: p["name"])
    ]


def read_lock(path):
    """{name: version} of a lock file written by ``lock``."""
    pins = {}
    with open(path) as f:
        for line in f:
            pin = line.split()[0] if line.strip() else ""
            if "==" in pin:
                name, version = pin.split("==", 1)
                pins[canonical(name)] = version
    return pins


def wheel_metadata(path):
    """(name, version, [Requires-Dist]) of a wheel file, from its METADATA."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(z.read(meta).decode())
    return canonical(message["Name"]), message["Version"], message.get_all("Requires-Dist") or []


def unmet(requires, available, extras=()):
    """The requirement strings of ``requires`` that ``available`` ({name: version}) does not
    meet, markers evaluated for this interpreter (``extras`` the ones asked for)."""
    from pip._vendor.packaging.requirements import Requirement

    missing = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
            continue
        have = available.get(canonical(req.name))
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            missing.append(f"{text} (found {have or 'nothing'})")
    return missing


def verify(lock, folder):
    """Differences between the wheels in ``folder`` and the pins of ``lock``, and the
    requirements the wheels leave unmet among themselves: a list of lines, empty when none."""
    pins = read_lock(lock)
    found, problems = {}, []
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".whl"):
            continue
        name, version, requires = wheel_metadata(os.path.join(folder, file))
        found[name] = (version, requires)
        if pins.get(name) != version:
            problems.append(f"{file}: {name} {version} is not the resolver's pick ({pins.get(name) or 'not picked'})")
    problems += [f"{name}=={pin}: picked by the resolver, no wheel" for name, pin in pins.items() if name not in found]
    versions = {name: version for name, (version, _) in found.items()}
    for name, (version, requires) in sorted(found.items()):
        problems += [f"{name} {version} needs {need}" for need in unmet(requires, versions)]
    return problems


def satisfied(site):
    """Requirements of the distributions in ``site`` that this interpreter's packages (``site``
    first on the path) do not meet: a list of lines."""
    import importlib.metadata

    sys.path.insert(0, site)
    versions = {}
    for dist in importlib.metadata.distributions(path=sys.path):
        versions.setdefault(canonical(dist.metadata["Name"]), dist.version)
    problems = []
    for dist in importlib.metadata.distributions(path=[site]):
        name = canonical(dist.metadata["Name"])
        problems += [f"{name} {dist.version} needs {need}" for need in unmet(dist.requires or [], versions)]
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    lock = verbs.add_parser("lock")
    lock.add_argument("out")
    lock.add_argument("-r", dest="requirements", action="append", required=True)
    lock.add_argument("-c", dest="constraints", action="append", default=[])
    lock.add_argument("--name", action="append", help="only these projects' lines of the requirement files")
    check = verbs.add_parser("verify")
    check.add_argument("lock")
    check.add_argument("folder")
    installed = verbs.add_parser("satisfied")
    installed.add_argument("site")
    args = parser.parse_args()
    if args.verb == "lock":
        picked = resolve(requirement_lines(args.requirements, args.name), args.constraints)
        with open(args.out, "w") as f:
            f.write("\n".join(lock_lines(picked)) + "\n")
        print(f"{args.out}: {len(picked)} distributions")
        return 0
    problems = verify(args.lock, args.folder) if args.verb == "verify" else satisfied(args.site)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
