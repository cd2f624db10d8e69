"""The FastAPI app: REST API under /api/v1, the customer portal and the staff console."""
