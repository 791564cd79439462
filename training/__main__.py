from p2p.training.cli import main

main(prog_name="python -m p2p.training")
