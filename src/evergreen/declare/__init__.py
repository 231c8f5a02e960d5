"""`evergreen init`: a `data:` declaration inferred from a table (`infer`, pure) and written into a project
(`write`: params.yaml, the data source and the expectation suites)."""
