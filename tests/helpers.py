"""Assertions shared by the suites' tests."""


def assert_usage_error(main, argv, out, capsys, message=""):
    """A user's bad input: exit 2, one `error:` line on stderr naming the problem, nothing written to out."""
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
