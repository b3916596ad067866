"""HTTP layer: Litestar controllers per NVCF API group, thin over the domain."""
