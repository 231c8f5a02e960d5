"""The prediction service (`app`: HTTP over `service`), its prediction log (`log`), request model (`schema`),
champion loading (`champion`) and batch scoring (`batch`). None of it imports torch."""
