from aghd.main import main

main()
