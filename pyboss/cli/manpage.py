"""Render roff man pages from the click command definitions.

The packages build pyboss(1) and one pyboss-SUBCOMMAND(1) page per subcommand
from ``pyboss.cli.main:cli`` so that the pages can never drift from ``--help``:

    python3 -m pyboss.cli.manpage OUTPUT_DIR [--version VERSION]

The date on the pages comes from SOURCE_DATE_EPOCH when it is set (as the
Debian, RPM and Arch builds do), so rebuilding the same source gives the same
bytes.
"""

import datetime
import inspect
import os
import re
import sys
from pathlib import Path

import click


SYSTEMD_PAGES = ("systemd.socket(5)", "systemd.service(5)", "sd_notify(3)")


def escape(text):
    """Make plain text safe inside a roff line: backslashes, hyphens, quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # A line starting with "." or "'" would be read as a roff request.
    return re.sub(r"(?m)^([.'])", r"\\&\1", text)


def paragraphs(help_text):
    """Split click help into roff paragraphs, keeping click's \\b blocks verbatim."""
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(help_text or "")):
        if not block.strip():
            continue
        if block.startswith("\b"):
            lines = block.split("\n")[1:]
            out.append(".nf\n" + escape("\n".join(lines)) + "\n.fi")
        else:
            out.append(escape(" ".join(line.strip() for line in block.split("\n"))))
    return "\n.PP\n".join(out)


def metavar_of(param, ctx):
    try:  # click >= 8.2 wants the context
        return param.make_metavar(ctx)
    except TypeError:
        return param.make_metavar()


def option_lines(param, ctx):
    """One .TP entry per option: the switches in bold, the value in italics."""
    switches = ", ".join("\\fB%s\\fR" % escape(opt) for opt in param.opts + param.secondary_opts)
    if not param.is_flag and not param.count:
        switches += " \\fI%s\\fR" % escape(metavar_of(param, ctx))
    help_text = param.help or ""
    extras = []
    if param.multiple:
        extras.append("may be repeated")
    if param.show_default and param.default not in (None, False, ()):
        extras.append("default: %s" % (param.default,))
    if extras:
        help_text = (help_text + " (" + "; ".join(extras) + ")").strip()
    return ".TP\n%s\n%s" % (switches, paragraphs(help_text) or "")


def synopsis(command, ctx):
    pieces = ["[\\fIOPTIONS\\fR]"]
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            pieces.append("\\fI%s\\fR" % escape(metavar_of(param, ctx)))
    if isinstance(command, click.Group):
        pieces.append("\\fICOMMAND\\fR [\\fIARGS\\fR]...")
    return " ".join(pieces)


def page_date():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
              if epoch else datetime.datetime.now(datetime.timezone.utc))
    return moment.strftime("%Y-%m-%d")


def render(command, path, version, parent_ctx=None):
    """The roff source of the page for ``command``; ``path`` is e.g. ["pyboss", "exec"]."""
    ctx = click.Context(command, info_name=path[-1], parent=parent_ctx)
    page_name = "-".join(path)
    summary = command.get_short_help_str(limit=200).rstrip(".")
    sections = [
        '.TH "%s" "1" "%s" "pyboss %s" "pyboss manual"' % (
            escape(page_name.upper()), page_date(), escape(version)),
        ".SH NAME",
        "%s \\- %s" % (escape(page_name), escape(summary)),
        ".SH SYNOPSIS",
        ".B %s\n%s" % (escape(" ".join(path)), synopsis(command, ctx)),
    ]
    if command.help:
        sections += [".SH DESCRIPTION", paragraphs(command.help)]
    options = [p for p in command.get_params(ctx)
               if isinstance(p, click.Option) and not p.hidden]
    if options:
        sections += [".SH OPTIONS"] + [option_lines(p, ctx) for p in options]
    see_also = []
    if isinstance(command, click.Group):
        sections.append(".SH COMMANDS")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sections.append(".TP\n\\fB%s\\fR\n%s\nSee \\fB%s\\fR(1)." % (
                escape(name), escape(sub.get_short_help_str(limit=200)),
                escape(page_name + "-" + name)))
            see_also.append(page_name + "-" + name)
    elif len(path) > 1:
        see_also.append("-".join(path[:-1]))
    # pyboss lives under systemd: its unit and protocol pages belong on every page.
    references = ["%s(1)" % name for name in see_also] + list(SYSTEMD_PAGES)
    sections += [".SH SEE ALSO", ",\n".join(
        "\\fB%s\\fR(%s)" % (escape(ref[:-3]), ref[-2]) for ref in references)]
    return "\n".join(sections) + "\n"


def write_pages(group, directory, version, prog_name="pyboss"):
    """Write the group's page and one page per visible subcommand; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    top = directory / (prog_name + ".1")
    top.write_text(render(group, [prog_name], version))
    written.append(top)
    ctx = click.Context(group, info_name=prog_name)
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        page = directory / ("%s-%s.1" % (prog_name, name))
        page.write_text(render(sub, [prog_name, name], version, parent_ctx=ctx))
        written.append(page)
    return written


def installed_version():
    try:
        from importlib.metadata import version
        return version("pyboss")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


@click.command()
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--version", "version", default=None, help="Version printed in the page footer.")
def main(output_dir, version):
    """Write pyboss(1) and pyboss-COMMAND(1) man pages into OUTPUT_DIR."""
    from pyboss.cli.main import cli

    for path in write_pages(cli, output_dir, version or installed_version()):
        click.echo(str(path))


if __name__ == "__main__":
    sys.exit(main())
