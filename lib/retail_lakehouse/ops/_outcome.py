"""What every ops procedure's outcome can do: raise, with its own message, when it did not hold."""

from __future__ import annotations

from typing import ClassVar

from retail_lakehouse.core.errors import ProcedureFailedError


class Outcome:
    """Mixin of a procedure's outcome dataclass (with `held` and `message`).

    Attributes:
        procedure: the ops procedure (its notebook's name), for the error's context.
        run_id_field: the field holding the job run the procedure launched, if any.
    """

    procedure: ClassVar[str] = ""
    run_id_field: ClassVar[str] = "run_id"
    held: bool
    message: str

    @property
    def failed(self) -> bool:
        """Whether `raise_for_status()` raises: the outcome did not hold."""
        return not self.held

    def raise_for_status(self) -> None:
        """Raise when the outcome did not hold; do nothing when it did.

        Raises:
            ProcedureFailedError: with the outcome's message, the procedure and the job run it launched.
        """
        if self.failed:
            raise ProcedureFailedError(
                self.message, procedure=self.procedure, run_id=getattr(self, self.run_id_field, None)
            )
