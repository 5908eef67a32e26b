from agh.cli import run

run()
