"""The resources' shapes (pydantic models); the CRDs are generated from them."""
