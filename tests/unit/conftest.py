"""The unit tier: the spec, the result record and its statistics, the report, the CLI and the
scripts. Tests marked ``slow`` run the CLI end to end against real local clusters;
``make test-fast`` leaves them out."""
