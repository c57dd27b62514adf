"""The one kind of error a user mistake produces."""
import click


class UserError(click.ClickException):
    """Bad input: one line on stderr naming the problem and the fix, exit status 2."""
    exit_code = 2

    def __init__(self, message):
        super().__init__(message)
        # Lets main() prefix the line with the command that failed ("pyboss exec: ...").
        self.ctx = click.get_current_context(silent=True)
