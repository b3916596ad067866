"""The admin commands of the `nvcf-lite` executable, one module per verb (parsed in __main__)."""
