"""The end of a customer's relationship: the data export (GDPR Art. 15 and 20) and closing the
organization. It stands above billing (it reads and acts on every package below it)."""
