"""Learning from the user's examples on stored vectors: personal concepts.

``fit`` (logistic regression with a cross-validated threshold, scikit-learn loaded on use),
``apply`` (concept tag rows kept in step with the vectors, the indexing hook) and
``service.ConceptService`` (what the Library exposes). May import: ``indexer.store``,
``indexer.embed``, the leaves.
"""
