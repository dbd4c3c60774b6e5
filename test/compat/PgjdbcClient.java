// pgjdbc (Debian's libpostgresql-jdbc-java) through the pgwarden sidecar; run with the single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar PgjdbcClient.java JDBC_URL USER PASSWORD
// Prints one JSON line per check with what it observed; pgjdbc.test.ts asserts on them.
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PSQLException;

public class PgjdbcClient {
  static void emit(String check, String json) {
    System.out.println("{\"check\":\"" + check + "\"," + json + "}");
  }

  static String q(String s) {
    return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
  }

  public static void main(String[] args) throws Exception {
    String table = "jdbc_" + (System.currentTimeMillis() % 1000000000L);
    try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
      // What connection pools (HikariCP) call to test a connection: pgjdbc sends an empty query.
      emit("valid", "\"valid\":" + c.isValid(5));
      try (Statement st = c.createStatement()) {
        st.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, name text)");
      }

      // What ORMs and schema tools ask: pgjdbc reads key columns as `(information_schema._pg_expandarray(i.indkey)).n`.
      DatabaseMetaData md = c.getMetaData();
      String columns = "";
      for (ResultSet rs : new ResultSet[] {
          md.getPrimaryKeys(null, "public", table),
          md.getIndexInfo(null, "public", table, false, true),
          md.getBestRowIdentifier(null, "public", table, DatabaseMetaData.bestRowSession, true),
          md.getColumns(null, "public", table, "%")}) {
        try (rs) {
          while (rs.next()) columns += rs.getString("COLUMN_NAME") + ",";
        }
        columns += ";";
      }
      emit("metadata", "\"columns\":" + q(columns));

      // Past prepareThreshold (5) pgjdbc switches to a named server-side statement (S_1, ...).
      long sum = 0;
      try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2")) {
        for (int i = 1; i <= 10; i++) {
          ps.setInt(1, i);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            sum += rs.getInt(1);
          }
        }
      }
      int serverPrepared;
      try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int * 2'")) {
        rs.next();
        serverPrepared = rs.getInt(1);
      }
      emit("prepared", "\"sum\":" + sum + ",\"serverPrepared\":" + serverPrepared);

      // executeBatch pipelines many Bind/Execute pairs before one Sync.
      try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
        for (int i = 1; i <= 1000; i++) {
          ps.setInt(1, i);
          ps.setString(2, "row " + i);
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        emit("batch", "\"statements\":" + counts.length);
      }

      c.setAutoCommit(false);
      try (Statement st = c.createStatement()) {
        st.executeUpdate("INSERT INTO " + table + " VALUES (1001, 'kept')");
        Savepoint sp = c.setSavepoint();
        st.executeUpdate("INSERT INTO " + table + " VALUES (1002, 'undone')");
        c.rollback(sp);
        c.commit();
        st.executeUpdate("INSERT INTO " + table + " VALUES (1003, 'rolled back')");
        c.rollback();
      }
      // With autocommit off, setFetchSize makes pgjdbc read through a portal, Execute with a row limit.
      try (PreparedStatement ps = c.prepareStatement("SELECT id FROM " + table + " ORDER BY id")) {
        ps.setFetchSize(100);
        long rows = 0, total = 0, last = 0;
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            rows++;
            last = rs.getLong(1);
            total += last;
          }
        }
        emit("cursor", "\"rows\":" + rows + ",\"total\":" + total + ",\"last\":" + last);
      }
      c.commit();
      c.setAutoCommit(true);

      CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
      StringBuilder in = new StringBuilder();
      for (int i = 2001; i <= 2500; i++) in.append(i).append(",copied ").append(i).append('\n');
      long copiedIn = copy.copyIn("COPY " + table + " FROM STDIN WITH (FORMAT csv)", new StringReader(in.toString()));
      StringWriter out = new StringWriter();
      copy.copyOut("COPY (SELECT id, name FROM " + table + " WHERE id IN (1, 1001, 2500) ORDER BY id) TO STDOUT WITH (FORMAT csv)", out);
      emit("copy", "\"in\":" + copiedIn + ",\"out\":" + q(out.toString()));

      try (Statement st = c.createStatement()) {
        st.executeQuery("SELECT * FROM no_such_table_jdbc");
        emit("error", "\"sqlState\":null");
      } catch (PSQLException e) {
        emit("error", "\"sqlState\":" + q(e.getSQLState()) + ",\"position\":" + e.getServerErrorMessage().getPosition());
      }

      try (Statement st = c.createStatement()) {
        Thread canceller = new Thread(() -> {
          try {
            Thread.sleep(300);
            st.cancel();
          } catch (Exception ignored) {
          }
        });
        canceller.start();
        long started = System.nanoTime();
        try {
          st.execute("SELECT pg_sleep(30)");
          emit("cancel", "\"sqlState\":null");
        } catch (SQLException e) {
          emit("cancel", "\"sqlState\":" + q(e.getSQLState()) + ",\"ms\":" + (System.nanoTime() - started) / 1_000_000);
        }
        canceller.join();
      }

      try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM " + table)) {
        rs.next();
        emit("after", "\"rows\":" + rs.getInt(1));
        st.execute("DROP TABLE " + table);
      }
    }
  }
}
