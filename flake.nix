{
  description = "smtp-gateway: authenticated SMTP submission in, an email API's JSON out";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      packageJson = lib.importJSON ./package.json;

      # Only what the build reads: a change to docs, tests or deployment files does not rebuild.
      src = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [
          ./package.json
          ./package-lock.json
          ./tsconfig.json
          ./tsconfig.build.json
          ./src
          ./bin
        ];
      };
    in
    {
      packages = forAllSystems (pkgs:
        let
          smtp-gateway = pkgs.buildNpmPackage {
            pname = packageJson.name;
            version = packageJson.version;
            inherit src;
            nodejs = pkgs.nodejs_22;
            # The hash of the npm dependencies (fixed-output): after a change to package-lock.json,
            # set it to lib.fakeHash, run `nix build`, and copy the hash Nix prints here.
            npmDepsHash = lib.fakeHash;
            # `npm run build` (tsc -p tsconfig.build.json) makes dist/; dev dependencies are
            # pruned before install, and bin/smtp-gateway.js becomes $out/bin/smtp-gateway.
            npmBuildScript = "build";
            meta = {
              description = packageJson.description;
              license = lib.licenses.mit;
              mainProgram = "smtp-gateway";
              platforms = lib.platforms.unix;
            };
          };
        in
        {
          inherit smtp-gateway;
          default = smtp-gateway;
        });

      apps = forAllSystems (pkgs:
        let
          pkg = self.packages.${pkgs.stdenv.hostPlatform.system}.smtp-gateway;
          serve = pkgs.writeShellScriptBin "smtp-gateway-serve" ''
            # the container image's malloc setting (README, Benchmarks), unless the caller set one
            export MALLOC_ARENA_MAX="''${MALLOC_ARENA_MAX:-2}"
            exec ${pkg}/bin/smtp-gateway serve "$@"
          '';
        in
        {
          # nix run . : the gateway with its defaults (DATA_DIR=./data, SMTP on 587, HTTP on 8080).
          default = { type = "app"; program = "${serve}/bin/smtp-gateway-serve"; };
          # nix run .#cli -- users add alice --sender alice@example.com
          cli = { type = "app"; program = "${pkg}/bin/smtp-gateway"; };
        });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_22
            pkgs.redis # REDIS_URL tests and local runs
            pkgs.swaks # sending test messages by hand
            pkgs.openssl
            pkgs.jq
            # scripts/validate-deployment.sh and test/deployment/
            pkgs.kubernetes-helm
            pkgs.kubeconform
            pkgs.kubectl
            pkgs.yamllint
            pkgs.go
          ];
          shellHook = ''
            echo "smtp-gateway dev shell: node $(node --version); npm ci && npm test"
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
