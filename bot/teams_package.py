"""`policybot teams-package`: the Teams app package (manifest and icons, zipped) that a Teams admin uploads."""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from bot.settings import PROJECT_ROOT, Settings

TEMPLATE_DIR = PROJECT_ROOT / "teams"
MANIFEST = "manifest.json"
ICONS = ("color.png", "outline.png")
PLACEHOLDER_URL = "https://www.example.gov.uk"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def package_version() -> str:
    """The project's version in the x.y.z form Teams requires (it must grow with each upload of an update)."""
    try:
        version = metadata.version("council-policy-adviser")
    except metadata.PackageNotFoundError:
        return "1.0.0"
    return version if _VERSION.match(version) else "1.0.0"


def fill_template(template: object, values: dict[str, str]) -> object:
    """Replace every {{NAME}} in the manifest template's strings; an unknown placeholder is an error."""
    if isinstance(template, dict):
        return {key: fill_template(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill_template(value, values) for value in template]
    if isinstance(template, str):
        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ValueError(f"{MANIFEST}: no value for the placeholder {match.group(0)}")
            return values[match.group(1)]

        return re.sub(r"\{\{([A-Z_]+)\}\}", replace, template)
    return template


def build_manifest(template: dict, settings: Settings, app_id: str, version: str, developer: str,
                   website_url: str, privacy_url: str, terms_url: str) -> dict:
    """The manifest with the bot's app id and the council's details filled in; the server's public host (if
    set) is listed as a valid domain."""
    if not _GUID.match(app_id or ""):
        raise ValueError("the Teams package needs the bot's Microsoft app id (a GUID): set MicrosoftAppId or pass "
                         f"--app-id (got {app_id!r})")
    if not _VERSION.match(version):
        raise ValueError(f"--version must look like 1.2.3, not {version!r}")
    for name, url in (("website", website_url), ("privacy", privacy_url), ("terms of use", terms_url)):
        if urlsplit(url).scheme != "https":
            raise ValueError(f"the {name} URL must start with https:// (Teams rejects others): {url!r}")
    manifest = fill_template(template, {
        "MICROSOFT_APP_ID": app_id.lower(), "VERSION": version, "DEVELOPER_NAME": developer[:32],
        "WEBSITE_URL": website_url, "PRIVACY_URL": privacy_url, "TERMS_URL": terms_url,
    })
    host = urlsplit(settings.public_url).hostname if settings.public_url else None
    if host and host not in manifest.get("validDomains", []):
        manifest["validDomains"] = [*manifest.get("validDomains", []), host]
    return manifest


def write_package(output: Path, manifest: dict, template_dir: Path = TEMPLATE_DIR) -> Path:
    """Zip manifest.json and the two icons at the archive's root, which is where Teams looks for them."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for icon in ICONS:
            archive.write(template_dir / icon, icon)
    return output


def cmd_teams_package(args: argparse.Namespace, settings: Settings) -> int:
    template_dir = Path(args.template_dir)
    try:
        template = json.loads((template_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the manifest template in {template_dir}: {exc}") from exc
    for icon in ICONS:
        if not (template_dir / icon).is_file():
            raise ValueError(f"missing icon {template_dir / icon}")
    public = settings.public_url if settings.public_url.startswith("https://") else ""
    website = args.website_url or public or PLACEHOLDER_URL
    urls = (website, args.privacy_url or website, args.terms_url or website)
    manifest = build_manifest(template, settings, args.app_id or settings.teams_app_id, args.version,
                              args.developer, *urls)
    output = write_package(Path(args.output), manifest, template_dir)
    print(f"wrote {output} (app id {manifest['id']}, version {manifest['version']}); upload it in Teams: "
          "Apps > Manage your apps > Upload an app")
    if PLACEHOLDER_URL in urls:
        print(f"warning: {PLACEHOLDER_URL} is a placeholder: pass --website-url, --privacy-url and --terms-url "
              "(or set POLICYBOT_PUBLIC_URL) before publishing to your organisation", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `policybot teams-package` to the command line (bot/cli.py discovers this function)."""
    command = sub.add_parser("teams-package", help="write the Teams app package (zip) for a Teams admin to upload")
    command.add_argument("--output", "-o", default="policybot-teams.zip", help="where to write the zip")
    command.add_argument("--app-id", default="", help="the Azure Bot's Microsoft app id (default: MicrosoftAppId)")
    command.add_argument("--version", default=package_version(), help="the app version, x.y.z; raise it for "
                         "each update you upload")
    command.add_argument("--developer", default="Council", help="the publisher name shown in Teams")
    command.add_argument("--website-url", default="", help="https URL of the council or the service")
    command.add_argument("--privacy-url", default="", help="https URL of the privacy notice")
    command.add_argument("--terms-url", default="", help="https URL of the terms of use")
    command.add_argument("--template-dir", default=str(TEMPLATE_DIR), help=argparse.SUPPRESS)
    command.set_defaults(func=cmd_teams_package)
