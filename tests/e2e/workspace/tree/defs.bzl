"""A rule whose output is a directory (a tree artifact), optionally holding a symlink.

Remote caches return such outputs as `output_directories` plus a Tree blob, a
different path from plain files, so the end-to-end tests need one.
"""

def _directory_of_files_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    script = [
        "set -e",
        "mkdir -p $1/nested/deeper",
        "printf 'top file\\n' > $1/top.txt",
        "printf 'nested file\\n' > $1/nested/inner.txt",
        "seq 1 5000 > $1/nested/deeper/numbers.txt",
        "touch $1/nested/empty.txt",
    ]
    if ctx.attr.with_symlink:
        script.append("ln -s nested/inner.txt $1/link_to_inner.txt")
    ctx.actions.run_shell(
        outputs = [out],
        command = "\n".join(script),
        arguments = [out.path],
        mnemonic = "DirectoryOfFiles",
        progress_message = "Writing directory %s" % out.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

directory_of_files = rule(
    implementation = _directory_of_files_impl,
    attrs = {"with_symlink": attr.bool(default = False)},
)
