// A Java caller of tokenvend on the grpc-java stubs generated from proto/ (pom.xml):
//
//   java -jar target/tokenvend-javaclient.jar calls ADDRESS
//
// calls every RPC of tokenvend.v1.TokenService once or more, reads errors the way a Java caller
// does (StatusProto.fromThrowable, then the google.rpc details unpacked from Any), and prints
// what it saw as one JSON object on stdout; test/java-client.test.ts checks every value.
package tokenvend.javaclient;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.Timestamps;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import tokenvend.v1.TokenServiceGrpc;
import tokenvend.v1.TokenServiceOuterClass.CompleteAuthorizationRequest;
import tokenvend.v1.TokenServiceOuterClass.Credential;
import tokenvend.v1.TokenServiceOuterClass.ExchangeTarget;
import tokenvend.v1.TokenServiceOuterClass.ExchangeTokenRequest;
import tokenvend.v1.TokenServiceOuterClass.ExchangeTokenResponse;
import tokenvend.v1.TokenServiceOuterClass.GetAllUpstreamCredentialsRequest;
import tokenvend.v1.TokenServiceOuterClass.GetAllUpstreamCredentialsResponse;
import tokenvend.v1.TokenServiceOuterClass.GetTokenRequest;
import tokenvend.v1.TokenServiceOuterClass.GetValidTokensRequest;
import tokenvend.v1.TokenServiceOuterClass.RevokeSessionRequest;
import tokenvend.v1.TokenServiceOuterClass.RevokeSessionResponse;
import tokenvend.v1.TokenServiceOuterClass.SessionTarget;
import tokenvend.v1.TokenServiceOuterClass.StartAuthorizationRequest;
import tokenvend.v1.TokenServiceOuterClass.StartAuthorizationResponse;
import tokenvend.v1.TokenServiceOuterClass.StartDeviceAuthorizationRequest;
import tokenvend.v1.TokenServiceOuterClass.StartDeviceAuthorizationResponse;
import tokenvend.v1.TokenServiceOuterClass.StoreUpstreamTokensRequest;
import tokenvend.v1.TokenServiceOuterClass.WatchTokenRequest;
import tokenvend.v1.TokenServiceOuterClass.WatchTokenResponse;

public final class Main {
  private static final String SESSION = "java-session";
  private static final String PROVIDER = "idp";
  // What test/java-client.test.ts sets up: an allowed redirect URI, a session with real tokens
  // to exchange, and the audience to narrow them to.
  private static final String REDIRECT_URI = "http://127.0.0.1:3000/callback";
  private static final String EXCHANGE_SESSION = "java-exchange";
  private static final String AUDIENCE = "https://orders.example.test";

  public static void main(String[] args) throws Exception {
    if (args.length != 2 || !args[0].equals("calls")) {
      System.err.println("usage: tokenvend-javaclient calls ADDRESS");
      System.exit(2);
    }
    ManagedChannel channel = ManagedChannelBuilder.forTarget(args[1]).usePlaintext().build();
    try {
      System.out.println(Json.write(calls(channel)));
    } catch (StatusRuntimeException e) {
      System.err.println("tokenvend-javaclient: unexpected " + e.getStatus());
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static Map<String, Object> calls(ManagedChannel channel) {
    TokenServiceGrpc.TokenServiceBlockingStub stub =
        TokenServiceGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS);
    Map<String, Object> out = new LinkedHashMap<>();
    List<String> called = new ArrayList<>();

    called.add("StoreUpstreamTokens");
    out.put("stored_generation", stub.storeUpstreamTokens(store("java-at-1")).getGeneration());

    called.add("GetValidTokens");
    out.put(
        "valid",
        credential(
            stub.getValidTokens(
                    getValid(SESSION).setExpectedSubject("dave").setExpectedClientId("java-client").build())
                .getCredential()));

    called.add("GetAllUpstreamCredentials");
    GetAllUpstreamCredentialsResponse all =
        stub.getAllUpstreamCredentials(
            GetAllUpstreamCredentialsRequest.newBuilder().setSessionId(SESSION).build());
    Map<String, Object> byProvider = new LinkedHashMap<>();
    all.getCredentialsMap().forEach((p, c) -> byProvider.put(p, credential(c)));
    out.put("all", byProvider);
    out.put("all_failures", all.getFailuresCount());

    called.add("GetToken");
    out.put(
        "grant",
        credential(stub.getToken(GetTokenRequest.newBuilder().setGrant("demo").build()).getCredential()));

    // The flows tokenvend runs itself: a login's URL and state, a state it never issued, a
    // device login's user code, and a token narrowed to one audience.
    called.add("StartAuthorization");
    StartAuthorizationResponse login =
        stub.startAuthorization(
            StartAuthorizationRequest.newBuilder()
                .setSessionId("java-login")
                .setProvider(PROVIDER)
                .setRedirectUri(REDIRECT_URI)
                .build());
    Map<String, Object> started = new LinkedHashMap<>();
    java.net.URI url = java.net.URI.create(login.getAuthorizationUrl());
    started.put("origin", url.getScheme() + "://" + url.getAuthority());
    started.put("state_in_url", login.getAuthorizationUrl().contains("state=" + login.getState()));
    started.put("pkce", login.getAuthorizationUrl().contains("code_challenge_method=S256"));
    out.put("authorization", started);

    called.add("CompleteAuthorization");
    out.put(
        "unknown_state",
        error(
            () ->
                stub.completeAuthorization(
                    CompleteAuthorizationRequest.newBuilder()
                        .setState("java-never-issued")
                        .setCode("x")
                        .build())));

    called.add("StartDeviceAuthorization");
    StartDeviceAuthorizationResponse device =
        stub.startDeviceAuthorization(
            StartDeviceAuthorizationRequest.newBuilder()
                .setSessionId("java-device")
                .setProvider(PROVIDER)
                .build());
    Map<String, Object> deviceOut = new LinkedHashMap<>();
    deviceOut.put("user_code_set", !device.getUserCode().isEmpty());
    deviceOut.put("verification_uri", device.getVerificationUri());
    out.put("device", deviceOut);

    called.add("ExchangeToken");
    ExchangeTokenResponse exchanged =
        stub.exchangeToken(
            ExchangeTokenRequest.newBuilder()
                .setTarget(
                    ExchangeTarget.newBuilder()
                        .setSession(
                            SessionTarget.newBuilder()
                                .setSessionId(EXCHANGE_SESSION)
                                .setProvider(PROVIDER)
                                .build())
                        .setAudience(AUDIENCE)
                        .addScopes("api:read")
                        .build())
                .build());
    Map<String, Object> exchangeOut = new LinkedHashMap<>();
    exchangeOut.put("issued_token_type", exchanged.getIssuedTokenType());
    exchangeOut.put("token_type", exchanged.getCredential().getTokenType());
    exchangeOut.put("scopes", new ArrayList<Object>(exchanged.getCredential().getScopesList()));
    exchangeOut.put("generation", exchanged.getCredential().getGeneration());
    out.put("exchange", exchangeOut);
    out.put("exchanged_access_token", exchanged.getCredential().getAccessToken());

    out.put(
        "not_found",
        error(() -> stub.getValidTokens(getValid("nobody").build())));
    out.put(
        "wrong_subject",
        error(() -> stub.getValidTokens(getValid(SESSION).setExpectedSubject("mallory").build())));
    out.put("missing_access_token", error(() -> stub.storeUpstreamTokens(store(""))));

    // The stream: the current token, the renewal our own store causes, then the end that the
    // revocation causes (NOT_FOUND).
    called.add("WatchToken");
    Iterator<WatchTokenResponse> stream =
        stub.watchToken(
            WatchTokenRequest.newBuilder()
                .setSession(
                    SessionTarget.newBuilder().setSessionId(SESSION).setProvider(PROVIDER).build())
                .build());
    List<Object> watch = new ArrayList<>();
    watch.add(watched(stream.next()));
    out.put("restored_generation", stub.storeUpstreamTokens(store("java-at-2")).getGeneration());
    watch.add(watched(stream.next()));
    out.put("watch", watch);

    called.add("RevokeSession");
    RevokeSessionResponse revoked =
        stub.revokeSession(
            RevokeSessionRequest.newBuilder().setSessionId(SESSION).setProvider(PROVIDER).build());
    out.put("revoked_providers", new ArrayList<Object>(revoked.getRevokedProvidersList()));
    out.put("watch_end", error(stream::hasNext));
    out.put(
        "after_revoke",
        error(() -> stub.getValidTokens(getValid(SESSION).build())));
    out.put("called", new ArrayList<Object>(called));
    return out;
  }

  private static GetValidTokensRequest.Builder getValid(String session) {
    return GetValidTokensRequest.newBuilder().setSessionId(session).setProvider(PROVIDER);
  }

  private static StoreUpstreamTokensRequest store(String accessToken) {
    return StoreUpstreamTokensRequest.newBuilder()
        .setSessionId(SESSION)
        .setProvider(PROVIDER)
        .setAccessToken(accessToken)
        .setRefreshToken("java-rt")
        .setIdToken("java-id")
        .setExpiresIn(300)
        .addScopes("openid")
        .addScopes("api:read")
        .setSubject("dave")
        .setClientId("java-client")
        .build();
  }

  private static Map<String, Object> credential(Credential c) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("access_token", c.getAccessToken());
    m.put("id_token", c.getIdToken());
    m.put("token_type", c.getTokenType());
    m.put("scopes", new ArrayList<Object>(c.getScopesList()));
    m.put("generation", c.getGeneration());
    m.put("expires_at_ms", Timestamps.toMillis(c.getExpiresAt()));
    return m;
  }

  private static Map<String, Object> watched(WatchTokenResponse r) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("reason", r.getReason().name());
    m.put("access_token", r.getCredential().getAccessToken());
    m.put("generation", r.getCredential().getGeneration());
    return m;
  }

  /** The status of a call that must fail, with its google.rpc details as a Java caller reads them. */
  private static Map<String, Object> error(Runnable call) {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      Map<String, Object> m = new LinkedHashMap<>();
      m.put("code", e.getStatus().getCode().name());
      com.google.rpc.Status status = StatusProto.fromThrowable(e);
      List<Object> violations = new ArrayList<>();
      for (Any detail : status == null ? List.<Any>of() : status.getDetailsList()) {
        try {
          if (detail.is(ErrorInfo.class)) {
            ErrorInfo info = detail.unpack(ErrorInfo.class);
            m.put("reason", info.getReason());
            m.put("domain", info.getDomain());
          } else if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              Map<String, Object> fv = new LinkedHashMap<>();
              fv.put("field", v.getField());
              fv.put("description", v.getDescription());
              violations.add(fv);
            }
          } else {
            m.put("unknown_detail", detail.getTypeUrl());
          }
        } catch (InvalidProtocolBufferException bad) {
          m.put("undecodable_detail", detail.getTypeUrl());
        }
      }
      if (!violations.isEmpty()) m.put("violations", violations);
      return m;
    }
    throw Status.INTERNAL.withDescription("the call succeeded; an error was expected").asRuntimeException();
  }

  private interface Runnable {
    void run();
  }
}
