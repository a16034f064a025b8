"""Real test beds (daemons, images, set-up) shared by the tests, benchmarks and the demo."""
