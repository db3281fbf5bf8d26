"""The same remediation as `invoke fix-rate-limit` + `invoke fix-nginx`, as a careful pyinfra user writes it.

Host data (app_dir, env_file, nginx_site, ws_location, env_flags, nginx_directives) comes from the
inventory that benchmarks/run.py generates. nginx_site is the resolved site file: `sed -i` (files.line)
would replace the sites-enabled symlink with a regular file.

Directives already in the site (anywhere outside our block) are replaced in place with files.line; the
others go in ONE marked block right after the `location ... {` line (files.block). Which is which is decided
from the file's contents (one fact), ignoring our own block, so a rerun plans exactly the same operations.
"""

import re

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

MARKER = "# {mark} benchmark WebSocket directives"
env_file = host.data.env_file
site = host.data.nginx_site
location = host.data.ws_location


def key_regex(directive: str) -> str:
    words = directive.split()
    key = words[:2] if words[0] == "proxy_set_header" else words[:1]
    return r"^\s*" + r"\s+".join(re.escape(w) for w in key) + r"\s"


env_ops = [
    files.line(name=f"App .env {key}", path=env_file, line=f"^{key}=.*$", replace=f"{key}={value}")
    for key, value in host.data.env_flags.items()
]

lines = host.get_fact(FileContents, path=site) or []
outside, inside = [], False
for text in lines:
    if text.strip() in (MARKER.format(mark="BEGIN"), MARKER.format(mark="END")):
        inside = text.strip() == MARKER.format(mark="BEGIN")
        continue
    if not inside:
        outside.append(text)

in_place, missing = [], []
for directive in host.data.nginx_directives:
    found = any(re.match(key_regex(directive), t) for t in outside)
    (in_place if found else missing).append(directive)

nginx_ops = [
    # grep/sed basic regexes: `\s` and `\+` are GNU extensions that both understand.
    files.line(name=f"nginx {d.split()[0]}", path=site,
               line=key_regex(d).replace(r"\s+", r"\s\+") + ".*$",
               replace=f"        {d};")
    for d in in_place
]
if missing:
    nginx_ops.append(files.block(
        name="nginx directives missing from the location", path=site, marker=MARKER,
        content=[f"        {d};" for d in missing],
        # files.block matches this with awk (/REGEX/): POSIX classes, `/` escaped, `{` in brackets.
        line=r"^[ \t]*location[ \t]+" + location.replace("/", r"\/") + r"[ \t]*[{]", after=True))

server.shell(name="Recreate backend", commands=[f"cd {host.data.app_dir} && docker-compose up -d --no-deps backend"],
             _if=any_changed(*env_ops))
server.shell(name="Test and reload nginx", commands=["nginx -t && nginx -s reload"],
             _if=any_changed(*nginx_ops))
